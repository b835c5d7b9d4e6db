-- Answers with the candidate named by request.key_id ("3" -> candidate 3) after checking
-- the request's strings, which change from call to call.
local calls = 0

function route(request, candidates)
  calls = calls + 1
  assert(request.route == "r" .. request.key_id, request.route .. " / " .. request.key_id)
  local want = nil
  if request.key_id ~= "" then want = "v" .. request.key_id end
  assert(request.metadata.k == want, tostring(request.metadata.k))
  if request.key_id == "" then return { #candidates } end
  return { tonumber(request.key_id) }
end
