-- The model's last cold starts, newest first: the JSON of each (lib.lua, ready.lua), those expired left out.
-- ARGV[3..]: model. Returns the list.
local found = {}
for _, id in ipairs(redis.call('LRANGE', K.cold_starts .. ARGV[3], 0, -1)) do
  local cold = redis.call('GET', K.cold_start .. id)
  if cold then table.insert(found, cold) end
end
return found
