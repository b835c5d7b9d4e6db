-- Defines no route function.
local x = 1
