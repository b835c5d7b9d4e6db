-- Tries to carry state from one call into the next through the tables it is given: each
-- call must see only its own request and candidates, whatever an earlier call did to its.
local saved_req, saved_cands, saved_c, saved_meta

function route(request, candidates)
  if request.route == "write" then
    -- everything a policy can write: the request, its metadata, the array, each candidate
    request.est_tokens = -1
    request.mine = true
    request.metadata.team = "stolen"
    request.metadata.mine = "x"
    for i = 1, #candidates do
      local c = candidates[i]
      c.mine = i
      c.price_in = -1
      c.breaker = "open"
      rawset(c, "tools", false)
    end
    candidates[#candidates + 1] = candidates[1]
    candidates.extra = true
    saved_req, saved_cands, saved_c, saved_meta = request, candidates, candidates[2],
      request.metadata
    table.sort(candidates, function(a, b) return a.index > b.index end)
    return { 2, 1 }
  end
  -- "check": nothing "write" did shows through this call's tables
  assert(request.est_tokens == 100, "est_tokens " .. tostring(request.est_tokens))
  assert(request.mine == nil and request.metadata.mine == nil)
  assert(request.metadata.team == "search", "team " .. tostring(request.metadata.team))
  assert(#candidates == 6 and candidates.extra == nil, "#candidates " .. #candidates)
  for i = 1, #candidates do
    local c = candidates[i]
    assert(c.index == i, "candidate " .. i .. " at " .. c.index)
    assert(c.mine == nil and c.price_in > 0 and rawget(c, "tools") == nil)
    assert(c.breaker == (i == 5 and "open" or "closed"), "breaker of " .. i)
  end
  assert(candidates[1].tools == true and candidates[3].tools == false)
  if saved_req then
    -- none of this call's tables is one of the saved ones ...
    assert(saved_req ~= request and saved_cands ~= candidates)
    assert(saved_meta ~= request.metadata)
    for i = 1, #candidates do assert(candidates[i] ~= saved_c) end
    -- ... and the saved request keeps what that call wrote into it: it is its own table
    assert(saved_req.est_tokens == -1 and saved_req.mine == true)
    assert(saved_meta.team == "stolen")
    -- a saved candidate table holds its own fields and reads the latest stats of its
    -- position (README: copy a stat into a local to keep it)
    assert(saved_c.mine == 2 and saved_c.price_in == -1)
    assert(saved_c.id == candidates[2].id and saved_c.latency_ms == candidates[2].latency_ms)
    if request.key_id == "stale" then return { saved_c } end
  end
  return candidates
end
