-- Grows memory without bound when asked to by request.route.
function route(request, candidates)
  if request.route == "bad" then
    local hoard = {}
    while true do
      hoard[#hoard + 1] = string.rep("x", 4096) .. #hoard
    end
  elseif request.route == "rep" then
    return { string.rep("x", 1 << 30) }
  end
  return candidates
end
