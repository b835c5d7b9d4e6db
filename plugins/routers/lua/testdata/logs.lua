-- Uses compass.log, compass.now_ms and print.
function route(request, candidates)
  compass.log("info", "hello from " .. request.route)
  print("printed", 1, true, nil)
  if compass.now_ms() <= 0 then error("clock") end
  if request.route == "badlevel" then compass.log("loud", "x") end
  return candidates
end
