-- The policy of README.md's five-minute tutorial, steps 2 and 3.
local function fits(request, c)
  if request.has_tools and not c.tools then return false end
  if c.context_window > 0 and c.context_window < request.est_tokens then return false end
  return true
end

function route(request, candidates)
  local ok = {}
  for _, c in ipairs(candidates) do
    if c.breaker ~= "open" and fits(request, c) then ok[#ok + 1] = c end
  end
  table.sort(ok, function(a, b) return a.latency_ms < b.latency_ms end)
  return ok
end
