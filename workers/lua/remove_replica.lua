-- The leader forgets a replica it stopped (or found gone); one still STARTING ends the model's start then.
-- ARGV[3..]: leader token, id, model.
-- Returns 1, or 0 if the caller no longer leads.
local token, id, model = ARGV[3], ARGV[4], ARGV[5]
if not leads(token) then return 0 end
if redis.call('HGET', K.replica .. id, 'state') == 'STARTING' then  -- a start stopped: it ended
  redis.call('SET', K.start_ended .. model, stamp(NOW))
end
index_ready(id, true)
redis.call('SREM', K.replicas .. model, id)
redis.call('DEL', K.replica .. id, K.slots .. id)
return 1
