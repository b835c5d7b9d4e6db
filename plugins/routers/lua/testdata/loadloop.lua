-- Loops while being loaded.
while true do end
