-- Never returns when asked to by request.route.
function route(request, candidates)
  if request.route == "bad" then
    while true do end
  elseif request.route == "sneaky" then
    -- tries to swallow the budget error with pcall and keep going
    while true do
      pcall(function() while true do end end)
    end
  end
  return candidates
end
