-- A STARTING replica answered ready: READY with the concurrency it was started with, its cold start (created to ready, by the Redis clock) folded into the
-- model's moving average, the model's start failure cleared, and parked jobs sent to its slots.
-- ARGV[3..]: leader token, id, concurrency, average weight.
-- Returns {cold start seconds, jobs sent}, or false if the caller no longer leads or the replica is not STARTING.
local token, id, concurrency, weight = ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local replica = K.replica .. id
local current = redis.call('HMGET', replica, 'state', 'model', 'started_at')
if not leads(token) or current[1] ~= 'STARTING' then return false end
local model, cold_start = current[2], NOW - tonumber(current[3])
redis.call('HSET', replica, 'state', 'READY', 'ready_at', stamp(NOW), 'last_used', stamp(NOW), 'reason', '',
           'concurrency', concurrency)
redis.call('HDEL', replica, 'log_tail', 'log_at')
redis.call('DEL', K.start_failure .. model)
fold(model, 'cold_start', cold_start, weight)
return {tostring(cold_start), dispatch(model, free_slots(model, concurrency))}
