-- Asserts every request and candidate field against what the test passes.
function route(request, candidates)
  local r = request
  assert(r.route == "fields", r.route)
  assert(r.n_messages == 2 and r.n_chars == 2000 and r.est_tokens == 500)
  assert(r.has_tools == true and r.has_images == false and r.stream == true)
  assert(r.key_id == "key-7")
  assert(r.metadata.team == "search" and r.metadata.tier == "gold")
  assert(r.now_ms == 1795428000000 and math.type(r.now_ms) == "integer")
  assert(r.hour == 10 and r.weekday == 1, r.hour .. " " .. r.weekday)
  assert(#candidates == 6)
  local c = candidates[5]
  assert(c.index == 5 and c.id == "broken/cheap" and c.provider == "broken")
  assert(c.model == "cheap" and c.tier == 3 and c.weight == 1.0)
  assert(c.price_in == 0.01 and c.price_out == 0.01)
  assert(c.latency_ms == 100 and c.ttft_ms == 25 and c.error_rate == 0.5)
  assert(c.in_flight == 3 and c.capacity == 10 and math.type(c.in_flight) == "integer")
  assert(c.breaker == "open" and candidates[1].breaker == "closed")
  assert(c.tools and c.vision and c.json and not candidates[3].tools)
  assert(c.context_window == 8192)
  return { 5 }
end
