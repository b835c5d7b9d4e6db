-- Raises errors in several ways when asked to by request.route; else passes.
function route(request, candidates)
  if request.route == "bad" then
    error("no candidate suits " .. request.key_id)
  elseif request.route == "bad_table" then
    error({ code = 42 })
  elseif request.route == "bad_level0" then
    error("no position here", 0)
  elseif request.route == "bad_index" then
    return candidates[1].nothing.deeper
  end
  return candidates
end
