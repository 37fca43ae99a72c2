-- The leader notes the last lines a STARTING replica printed, so the model's detail shows how far it got.
-- ARGV[3..]: leader token, id, the lines (one text, already cut to size by characters). Returns 1, or 0 if refused
-- (not leading, or not STARTING).
local token, id, lines = ARGV[3], ARGV[4], ARGV[5]
if not leads(token) or redis.call('HGET', K.replica .. id, 'state') ~= 'STARTING' then return 0 end
redis.call('HSET', K.replica .. id, 'log_tail', lines, 'log_at', stamp(NOW))
return 1
