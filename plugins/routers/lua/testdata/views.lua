-- Checks what a policy can and cannot do with the candidate tables.
local seen_last = nil

function route(request, candidates)
  local c = candidates[1]
  -- fields read as usual, pairs lists them
  assert(c.index == 1 and c.id == "openai/gpt-4o" and c.provider == "openai")
  assert(c.model == "gpt-4o" and c.tier == 1 and c.breaker == "closed")
  assert(c.tools == true and c.vision == true and c.json == true)
  assert(c.context_window == 128000 and c.price_in == 2.5 and c.capacity == 0)
  local n = 0
  for k, v in pairs(c) do n = n + 1 end
  assert(n == 18, "pairs saw " .. n .. " fields")
  -- the metatable is protected
  assert(getmetatable(c) == false)
  assert(not pcall(setmetatable, c, {}))
  -- a field the policy adds lives for this call only
  assert(c.mine == nil, "mine survived a call")
  c.mine = true
  -- overwriting a built-in field does not leak into the next call
  assert(c.price_in == 2.5, "price_in leaked: " .. tostring(c.price_in))
  c.price_in = 999
  -- a table from an earlier call is not one of this call's candidates
  if request.route == "stale" then return { seen_last } end
  seen_last = c
  return { c }
end
