-- A syntax error on line 3.
function route(request, candidates)
  return candidates +
end
