-- Each function reaches for something the sandbox does not give; each must fail cleanly.
function route_os(request, candidates) os.execute("true") return candidates end
function route_io(request, candidates) io.open("/etc/passwd") return candidates end
function route_load(request, candidates) load("return 1")() return candidates end
function route_require(request, candidates) require("os") return candidates end
function route_dofile(request, candidates) dofile("/etc/passwd") return candidates end
function route_debug(request, candidates) debug.sethook() return candidates end
function route_gc(request, candidates) collectgarbage("stop") return candidates end

-- Lists every forbidden name that is not nil; passes when the list is empty.
function route(request, candidates)
  local names = { "os", "io", "load", "loadfile", "dofile", "require", "collectgarbage",
                  "debug", "package", "loadstring", "module", "_G", "coroutine" }
  local found = {}
  for _, n in ipairs(names) do
    if _ENV[n] ~= nil then found[#found + 1] = n end
  end
  if #found > 0 then error("reachable: " .. table.concat(found, ",")) end
  -- what is allowed is there
  assert(string and table and math and utf8 and pairs and pcall and setmetatable)
  assert(compass and compass.log and compass.now_ms and print)
  return candidates
end
