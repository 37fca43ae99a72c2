-- Messages lost with a worker that died between taking a message and starting its job, or with a submit cut off
-- mid-way: QUEUED jobs not parked, with no live claim, sent more than `after` seconds ago, whose message is not in
-- the model's Celery queue, are sent again. While the queue holds messages, a job's own message is looked for
-- among the 1,000 oldest (where workers take from); past that it cannot be told and waits for the next pass.
-- A duplicate is harmless: one task starts the job, the other finds it taken.
-- ARGV[3..]: model, after (seconds), limit. Returns id, owner pairs of the jobs sent again.
local model, after, limit = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local queue = K.celery .. model
local backlog = redis.call('LLEN', queue)
if backlog > 1000 then return {} end
if backlog > 0 then limit = math.min(limit, 10) end
local sent = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.queued .. model, '-inf', NOW - after, 'LIMIT', 0, limit)) do
  local current = redis.call('HMGET', K.job .. id, 'status', 'claim', 'lease_until', 'owner', 'sends')
  if current[1] ~= 'QUEUED' then
    redis.call('ZREM', K.queued .. model, id)
  elseif not (current[2] and tonumber(current[3] or '0') > NOW) then
    local waiting = backlog > 0 and redis.call('LPOS', queue, message(id, model, id .. '.' .. (current[5] or '1')),
                                               'RANK', -1)
    if not waiting then
      redis.call('HSET', K.job .. id, 'requeued_at', stamp(NOW))
      send(id, model)
      table.insert(sent, id)
      table.insert(sent, current[4] or '')
    end
  end
end
return sent
