-- Writes fields of its own into the candidate tables on some calls and not on others, so
-- that views are made both with room and without it; the ranking comes from those fields.
function route(request, candidates)
  local r = request.route
  local n = #candidates
  if r == "plain" then
    for i = 1, n do assert(rawget(candidates[i], "k") == nil) end
    return candidates
  elseif r == "one" then      -- one field each: reverse order
    for i = 1, n do candidates[i].k = -i end
  elseif r == "many" then     -- more than a view has room for, and some overwrites
    for i = 1, n do
      local c = candidates[i]
      c.a, c.b, c.c, c.d = i, i, i, i
      c.latency_ms = 0
      c.k = -(c.a + c.b + c.c + c.d)
    end
  elseif r == "some" then     -- only the odd ones: those go first, in reverse
    for i = 1, n, 2 do candidates[i].k = -i end
    for i = 2, n, 2 do assert(candidates[i].k == nil) end
    local list = {}
    for i = 1, n, 2 do list[#list + 1] = candidates[i] end
    table.sort(list, function(a, b) return a.k < b.k end)
    return list
  end
  table.sort(candidates, function(a, b) return a.k < b.k end)
  return candidates
end
