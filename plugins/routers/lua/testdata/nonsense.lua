-- Returns answers that are not rankings, chosen by request.route.
function route(request, candidates)
  local r = request.route
  if r == "bad" then return 42
  elseif r == "empty" then return {}
  elseif r == "dup" then return { 1, 2, 1 }
  elseif r == "unknown_id" then return { "nobody/none" }
  elseif r == "range" then return { 99 }
  elseif r == "float" then return { 1.5 }
  elseif r == "foreign" then return { { id = candidates[1].id } }
  elseif r == "bool" then return { true }
  elseif r == "ids" then return { candidates[3].id, candidates[1].id }
  elseif r == "indexes" then return { 2, 3.0, 1 }
  elseif r == "mixed" then return { candidates[2], 3, candidates[1].id }
  end
  return candidates
end
