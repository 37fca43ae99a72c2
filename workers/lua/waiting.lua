-- What a waiting (QUEUED) job waits for, for its view: its message is out (sent), it waits for a free slot
-- (parked), and either way, while the model has no READY replica but one STARTING, that replica's start
-- (replica_starting, with the replica and the last line it printed). Reads only.
-- ARGV[3..]: id. Returns {} for a job not waiting; else {reason, since, now, replica ('' = none), stage ('' = none)}.
local id = ARGV[3]
local current = redis.call('HMGET', K.job .. id, 'status', 'model', 'parked_at', 'created_at')
if current[1] ~= S.QUEUED then return {} end
local model, reason, since = current[2], nil, nil
if redis.call('ZSCORE', K.parked .. model, id) then
  reason, since = 'parked', current[3] or current[4]
else
  reason, since = 'sent', redis.call('ZSCORE', K.sent .. model, id) or current[4]
end
local starting, started, stage = nil, nil, ''
for _, rid in ipairs(redis.call('SMEMBERS', K.replicas .. model)) do
  local r = redis.call('HMGET', K.replica .. rid, 'state', 'started_at', 'log_tail')
  if r[1] == 'READY' then return {reason, since, stamp(NOW), '', ''} end
  if r[1] == 'STARTING' and (started == nil or tonumber(r[2] or '0') < started) then
    starting, started = rid, tonumber(r[2] or '0')
    stage = string.match(r[3] or '', '([^\n]*)\n*$') or ''
  end
end
if starting then return {'replica_starting', since, stamp(NOW), starting, stage} end
return {reason, since, stamp(NOW), '', ''}
