-- The leader records a replica it is about to start (STARTING; handle and endpoint follow once it runs), before
-- any blocking call: every autoscaler then counts it, and a replica running without a record is a stray.
-- ARGV[3..]: leader token, id, model, backend. Returns 1, or 0 if the caller no longer leads.
local token, id, model, backend = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if not leads(token) then return 0 end
redis.call('HSET', K.replica .. id, 'id', id, 'model', model, 'backend', backend, 'endpoint', '', 'handle', '',
           'state', 'STARTING', 'started_at', stamp(NOW), 'reason', '')
redis.call('SADD', K.replicas .. model, id)
redis.call('SADD', K.models, model)
return 1
