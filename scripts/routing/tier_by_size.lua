-- tier_by_size.lua: pick the model tier from the size of the prompt.
--
-- Small prompts (a question, a classification) go to the fast, cheap tier; big ones (long
-- documents, large code context) go to the premium tier; everything else to the balanced
-- tier. Tiers come from the candidates' configuration:
--   1 premium, 2 balanced, 3 fast, 4 specialised, 0 unset.
--
-- The order returned: the wanted tier first, then the tiers next to it (nearer first, the
-- better tier before the cheaper one on a tie), candidates without a tier last. Within a
-- tier, the lower latency goes first. Candidates whose context window is known and too
-- small for the prompt are left out.

local SMALL = 1000   -- est_tokens below this: tier 3
local LARGE = 8000   -- est_tokens at or above this: tier 1; in between: tier 2

local function wanted_tier(tokens)
  if tokens < SMALL then return 3 end
  if tokens >= LARGE then return 1 end
  return 2
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

function route(request, candidates)
  local tokens = request.est_tokens
  local want = wanted_tier(tokens)
  local list = {}
  for i = 1, #candidates do
    local c = candidates[i]
    -- context_window is 0 when unknown: give those the benefit of the doubt.
    local ctx = c.context_window
    if ctx == 0 or ctx >= tokens then
      -- A sort key: distance from the wanted tier, doubled, +1 when the tier is cheaper
      -- than wanted (so tier 1 beats tier 3 when tier 2 was wanted). No tier: last.
      local tier = c.tier
      if tier == 0 then
        c.rank = 1000
      else
        local d = tier - want
        c.rank = d < 0 and -2 * d or 2 * d + (d > 0 and 1 or 0)
      end
      list[#list + 1] = c
    end
  end
  if #list == 0 then
    return candidates   -- nothing fits: let the providers say so
  end
  sort_by(list, "rank", "latency_ms")   -- then the configured order
  return list
end
