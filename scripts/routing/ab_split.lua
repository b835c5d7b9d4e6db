-- ab_split.lua: a deterministic A/B test between two deployments, 90% / 10%.
--
-- The route's first candidate is the control (A), its second the challenger (B). Each API
-- key is put in one arm by a hash of its key_id, so a caller always sees the same model
-- (no flapping between answers), and about 10% of keys see the challenger. Requests
-- without a key go to the control. A caller can force an arm for a test by sending the
-- metadata ab_arm = "a" or "b".
--
-- The other arm comes second (the failover target), then the remaining candidates in the
-- configured order.

local CHALLENGER_PERCENT = 10

-- FNV-1a, 32 bits. Lua 5.4 integers are 64-bit, so mask after each multiplication.
local function fnv1a(s)
  local h = 2166136261
  for i = 1, #s do
    h = h ~ string.byte(s, i)
    h = (h * 16777619) & 0xffffffff
  end
  return h
end

local function arm_of(request)
  local forced = request.metadata.ab_arm
  if forced == "a" or forced == "b" then return forced end
  if request.key_id == "" then return "a" end
  return (fnv1a(request.key_id) % 100) < CHALLENGER_PERCENT and "b" or "a"
end

function route(request, candidates)
  if #candidates >= 2 and arm_of(request) == "b" then
    -- `candidates` is this call's own array: reorder it in place rather than build another.
    candidates[1], candidates[2] = candidates[2], candidates[1]
  end
  return candidates   -- then the remaining candidates in the configured order
end
