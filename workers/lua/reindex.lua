-- A new leader rebuilds the index of READY replicas (keys.py: sm:ready) from the replicas' records, so records
-- written before the index existed route jobs too. ARGV[3..]: leader token.
-- Returns how many replicas it looked at, or -1 if the caller no longer leads.
if not leads(ARGV[3]) then return -1 end
local seen = 0
for _, model in ipairs(redis.call('SMEMBERS', K.models)) do
  for _, rid in ipairs(redis.call('ZRANGE', K.ready .. model, 0, -1)) do
    if redis.call('SISMEMBER', K.replicas .. model, rid) == 0 or redis.call('EXISTS', K.replica .. rid) == 0 then
      redis.call('ZREM', K.ready .. model, rid)  -- not a replica of the model, or its record is gone
    end
  end
  for _, rid in ipairs(redis.call('SMEMBERS', K.replicas .. model)) do
    index_ready(rid)
    seen = seen + 1
  end
end
return seen
