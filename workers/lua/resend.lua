-- Messages lost with a worker that died between taking a message and starting its job, or with a submit cut off
-- mid-way: QUEUED jobs not parked, with no live claim, sent more than `after` seconds ago while the model's Celery
-- queue is empty, are sent again. A duplicate is harmless: one task starts the job, the other finds it taken.
-- ARGV[3..]: model, after (seconds), limit. Returns id, owner pairs of the jobs sent again.
local model, after, limit = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
if redis.call('LLEN', K.celery .. model) > 0 then return {} end
local sent = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.queued .. model, '-inf', NOW - after, 'LIMIT', 0, limit)) do
  local current = redis.call('HMGET', K.job .. id, 'status', 'claim', 'lease_until', 'owner')
  if current[1] ~= 'QUEUED' then
    redis.call('ZREM', K.queued .. model, id)
  elseif not (current[2] and tonumber(current[3] or '0') > NOW) then
    redis.call('HSET', K.job .. id, 'requeued_at', stamp(NOW))
    send(id, model)
    table.insert(sent, id)
    table.insert(sent, current[4] or '')
  end
end
return sent
