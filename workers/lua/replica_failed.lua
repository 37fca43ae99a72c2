-- The leader found a replica gone or broken: FAILED with the reason and when, out of routing (it is stopped and
-- removed next). ARGV[3..]: leader token, id, reason. Returns 1, or 0 if the caller no longer leads or it is gone.
local token, id, reason = ARGV[3], ARGV[4], ARGV[5]
if not leads(token) or redis.call('EXISTS', K.replica .. id) == 0 then return 0 end
redis.call('HSET', K.replica .. id, 'state', 'FAILED', 'reason', reason, 'failed_at', stamp(NOW))
index_ready(id)
return 1
