-- A STARTING replica answered ready: READY with the concurrency it was started with, its cold start (recorded to
-- ready, by the Redis clock) folded into the model's moving average, the model's start failure cleared, and parked
-- jobs sent to its slots. Its cold start's stages (placed, created, process_up, ready: each from the end of the one
-- before, a stage not seen merged into the next) are kept in sm:cold_start:{id} and counted for /metrics; if jobs
-- were sent to it, its first result adds the stage first_result (lib.lua first_result).
-- ARGV[3..]: leader token, id, concurrency, average weight, and seconds before now (by the leader's clock, '' = not
-- seen) since it was created (if launched.lua did not know) and since its server first answered.
-- Returns {cold start seconds, jobs sent}, or false if the caller no longer leads or the replica is not STARTING.
local token, id, concurrency, weight = ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local created_ago, up_ago = ARGV[7], ARGV[8]
local replica = K.replica .. id
local current = redis.call('HMGET', replica, 'state', 'model', 'started_at', 'placed_at', 'created_at', 'host')
if not leads(token) or current[1] ~= 'STARTING' then return false end
local model, started, host = current[2], tonumber(current[3]), current[6] or ''
local cold_start = NOW - started
local placed = tonumber(current[4])
local created = tonumber(current[5]) or stage_end(created_ago, placed or started)
local up = stage_end(up_ago, created or placed or started)
redis.call('HSET', replica, 'state', 'READY', 'ready_at', stamp(NOW), 'last_used', stamp(NOW), 'reason', '',
           'concurrency', concurrency)
index_ready(id)
if created then redis.call('HSET', replica, 'created_at', stamp(created)) end
if up then redis.call('HSET', replica, 'up_at', stamp(up)) end
redis.call('HDEL', replica, 'log_tail', 'log_at')
redis.call('DEL', K.start_failure .. model)
redis.call('SET', K.start_ended .. model, stamp(NOW))
fold(model, 'cold_start', cold_start, weight)
local stages, last = {}, started
for _, stage in ipairs({{'placed', placed}, {'created', created}, {'process_up', up}, {'ready', NOW}}) do
  if stage[2] then
    stages[stage[1]] = stage[2] - last
    count_span(model, 'cold_start:' .. stage[1] .. ':' .. host, stage[2] - last)
    last = stage[2]
  end
end
local sent = dispatch(model, free_slots(model))
if sent > 0 then redis.call('HSET', replica, 'waited', sent)  -- its first result ends the cold start
else count_span(model, 'cold_start:total:' .. host, cold_start) end
redis.call('SET', K.cold_start .. id, cjson.encode({replica = id, model = model, host = host, started_at = started,
           ready_at = NOW, stages = stages, total = cold_start, waited = sent}), 'EX', RETENTION)
redis.call('LPUSH', K.cold_starts .. model, id)
redis.call('LTRIM', K.cold_starts .. model, 0, COLD_STARTS_KEPT - 1)
return {tostring(cold_start), sent}
