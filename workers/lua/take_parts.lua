-- RunPod's stream/<id>: the job's parts not handed out yet (at most `limit`), each poll taking the parts after the
-- last one taken, so a client polling them gets each part once; the count taken expires the retention after.
-- ARGV[3..]: id, limit. Returns the parts (JSON text each), in order.
local id, limit = ARGV[3], tonumber(ARGV[4])
local taken = tonumber(redis.call('GET', K.parts_taken .. id) or '0')
local parts = redis.call('LRANGE', K.parts .. id, taken, taken + limit - 1)
if #parts > 0 then
  redis.call('SET', K.parts_taken .. id, taken + #parts, 'EX', RETENTION)
end
return parts
