-- The reaper: jobs whose lease ran out (their worker died or froze). The slot such a job held is given back (and
-- a parked job sent to it), also for a job cancelled while it ran. A RUNNING job waits again (parked), or fails
-- with worker_lost into the dead letters after its last attempt. A job of a model not in the max attempts (gone
-- from the models file) waits parked: the janitor fails it (abandon.lua). The lost worker's late writes are
-- refused: its claim is gone. A job that gave parts of a streamed output fails interrupted (never runs again).
-- ARGV[3..]: limit, JSON object of each model's max attempts.
-- Returns, per job taken back: id, outcome (REQUEUED, DEAD or FREED), model, owner.
local limit, max_attempts = tonumber(ARGV[3]), cjson.decode(ARGV[4])
local reaped = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.leases, '-inf', NOW, 'LIMIT', 0, limit)) do
  redis.call('ZREM', K.leases, id)
  local job = K.job .. id
  local current = redis.call('HMGET', job, 'status', 'model', 'attempts', 'owner')
  if current[1] then
    local model = current[2]
    local freed = free_slot(id)
    redis.call('HDEL', job, 'claim', 'lease_until')
    local outcome = nil
    if current[1] == S.RUNNING then
      if max_attempts[model] and tonumber(current[3] or '0') >= max_attempts[model] then
        fail(id, model, 'worker_lost', 'the worker running it was lost on all ' .. current[3] .. ' attempts', true)
        outcome = 'DEAD'
      elseif streamed(id) then  -- a run again would repeat the parts it gave
        fail(id, model, 'interrupted', 'the worker running it was lost after it gave parts of its output', true)
        outcome = 'DEAD'
      else
        requeue(id, model)
      end
    end
    if not outcome and (current[1] == S.QUEUED or current[1] == S.RUNNING) then
      redis.call('HSET', job, 'requeued_at', stamp(NOW))
      park(id, model)
      outcome = 'REQUEUED'
    end
    if freed then
      dispatch(model, 1)
      if not outcome then  -- a job that finished (cancelled) while it ran: now its record may expire
        retire(id)
        outcome = 'FREED'
      end
    end
    if outcome then
      for _, v in ipairs({id, outcome, model, current[4] or ''}) do table.insert(reaped, v) end
    end
  end
end
return reaped
