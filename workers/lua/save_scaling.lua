-- The leader keeps the scaling policy's state of a model (its start backoff), so that it survives a failover.
-- ARGV[3..]: leader token, model, then field/value pairs. Returns 1, or 0 if the caller no longer leads.
local token, model = ARGV[3], ARGV[4]
if not leads(token) then return 0 end
redis.call('DEL', K.scaling .. model)
if #ARGV > 4 then redis.call('HSET', K.scaling .. model, unpack(ARGV, 5)) end
return 1
