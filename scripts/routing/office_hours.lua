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

local function by_tier(a, b)
  local ta = a.tier == 0 and 99 or a.tier   -- no tier configured: last
  local tb = b.tier == 0 and 99 or b.tier
  if ta ~= tb then return ta < tb end
  if a.latency_ms ~= b.latency_ms then return a.latency_ms < b.latency_ms end
  return a.index < b.index
end

local function by_price(a, b)
  local pa, pb = a.price_in + a.price_out, b.price_in + b.price_out
  if pa ~= pb then return pa < pb end
  return a.index < b.index
end

function route(request, candidates)
  if is_office_hours(request) then
    table.sort(candidates, by_tier)
  else
    table.sort(candidates, by_price)
  end
  return candidates
end
