-- office_hours.lua: premium models during office hours, cheap ones the rest of the time.
--
-- Monday to Friday, 09:00 to 18:00, people are waiting on the answers: rank by tier (1
-- premium first), then by latency. Nights and weekends the traffic is batch work: rank by
-- price. request.hour (0-23) and request.weekday (1 Monday .. 7 Sunday) are in the
-- gateway's local time zone (set TZ for compassd to change it).
--
-- Tip: to try a policy at another time of day, compute the time from request.now_ms, or
-- feed a test request with the now_ms you want (see plugins/routers/lua/test_lua_router.c).

local OPEN_HOUR, CLOSE_HOUR = 9, 18   -- [09:00, 18:00)

local function is_office_hours(request)
  return request.weekday <= 5 and request.hour >= OPEN_HOUR and request.hour < CLOSE_HOUR
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
  if is_office_hours(request) then
    -- by tier (1 premium first; no tier configured: last), then by latency
    for i = 1, #candidates do
      local c = candidates[i]
      local tier = c.tier
      c.tier_key = tier == 0 and 99 or tier
    end
    sort_by(candidates, "tier_key", "latency_ms")
  else
    for i = 1, #candidates do
      local c = candidates[i]
      c.price = c.price_in + c.price_out
    end
    sort_by(candidates, "price")
  end
  return candidates   -- equal keys keep the configured order
end
