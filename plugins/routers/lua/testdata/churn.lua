-- Makes and drops strings and tables of many sizes on every call, holding little: the
-- memory cap counts what is held, not what went through.
function route(request, candidates)
  local keep = {}
  for i = 1, 40 do
    local s = string.rep("x", (i * 37 + request.est_tokens) % 700)
    local t = {}
    for j = 1, i % 17 do t[j] = j end
    keep[i % 4 + 1] = { s, t }
  end
  return candidates
end
