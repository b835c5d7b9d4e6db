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

local function by_rank(a, b)
  if a.rank ~= b.rank then return a.rank < b.rank end
  if a.latency_ms ~= b.latency_ms then return a.latency_ms < b.latency_ms end
  return a.index < b.index
end

function route(request, candidates)
  local want = wanted_tier(request.est_tokens)
  local list = {}
  for i = 1, #candidates do
    local c = candidates[i]
    -- context_window is 0 when unknown: give those the benefit of the doubt.
    if c.context_window == 0 or c.context_window >= request.est_tokens then
      -- A sort key: distance from the wanted tier, doubled, +1 when the tier is cheaper
      -- than wanted (so tier 1 beats tier 3 when tier 2 was wanted). No tier: last.
      if c.tier == 0 then
        c.rank = 1000
      else
        local d = c.tier - want
        c.rank = d < 0 and -2 * d or 2 * d + (d > 0 and 1 or 0)
      end
      list[#list + 1] = c
    end
  end
  if #list == 0 then
    return candidates   -- nothing fits: let the providers say so
  end
  table.sort(list, by_rank)
  return list
end
