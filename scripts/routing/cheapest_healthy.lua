-- cheapest_healthy.lua: send each request to the cheapest deployment that is healthy.
--
-- A routing policy is a Lua 5.4 file that defines one function, route(request, candidates).
-- compass calls it for every request that uses the route, and tries the candidates it
-- returns in that order (the first one, and on failure the next, and so on).
--
-- Use it from compassd.conf:
--
--   routes = ( { name = "cheap"; strategy = "lua";
--                options = { policy = "scripts/routing/cheapest_healthy.lua"; };
--                candidates = [ "openai/gpt-4o-mini", "groq/llama-3.1-8b" ]; } );
--
-- What this policy does:
--   1. keeps the candidates whose circuit breaker is "closed" and whose recent error rate is
--      below 10%, and that can serve the request (tools, images);
--   2. prices the request on each of them: estimated prompt tokens at the input rate plus an
--      expected answer length at the output rate (rates are USD per million tokens);
--   3. returns them cheapest first. Candidates it leaves out are not tried for this request.
--   If nothing is healthy it returns every candidate, cheapest first, rather than nothing:
--   a policy that returns an empty list counts as an error and the route falls back to its
--   default strategy.

-- Tunables live at the top as locals: they are read once, when the file is loaded.
local MAX_ERROR_RATE = 0.10         -- 10%
local EXPECTED_OUTPUT_TOKENS = 256  -- we cannot know the answer's length; guess

-- A local function is private to this file. Policies see only a small sandbox: the
-- string, table, math and utf8 libraries, a few base functions, and `compass`.
local function can_serve(request, c)
  if request.has_tools and not c.tools then return false end
  if request.has_images and not c.vision then return false end
  return true
end

-- Sorts list in place, ascending by the number in field k1 of each entry and, where those
-- are equal, by field k2 (optional). The sort is stable: entries that tie on both keep the
-- order they came in, which here is the configured order. table.sort(list, less) would do
-- as well, but it calls `less` once per comparison; for a dozen candidates this insertion
-- sort, which compares the fields in place, is several times faster.
local function sort_by(list, k1, k2)
  for i = 2, #list do
    local c = list[i]
    local a1, a2 = c[k1], k2 and c[k2]
    local j = i - 1
    while j >= 1 do
      local p = list[j]
      local b1 = p[k1]
      if b1 < a1 or (b1 == a1 and (not k2 or p[k2] <= a2)) then break end
      list[j + 1] = p   -- p goes after c: move it up one
      j = j - 1
    end
    list[j + 1] = c
  end
end

-- The function compass calls. `request` and `candidates` are fresh tables on every call,
-- so you may sort them in place or add your own fields to them.
function route(request, candidates)
  local healthy = {}
  -- A numeric for is the cheapest way to walk an array (ipairs works too, a bit slower).
  for i = 1, #candidates do
    local c = candidates[i]
    if c.breaker == "closed" and c.error_rate < MAX_ERROR_RATE and can_serve(request, c) then
      healthy[#healthy + 1] = c
    end
  end
  if #healthy == 0 then
    healthy = candidates
  end

  -- Work the price out once per candidate, not in every comparison.
  local tokens = request.est_tokens   -- a local: read once, not once per candidate
  for i = 1, #healthy do
    local c = healthy[i]
    c.cost = (tokens * c.price_in + EXPECTED_OUTPUT_TOKENS * c.price_out) / 1e6
  end
  sort_by(healthy, "cost")   -- equal price: the configured order
  return healthy
end
