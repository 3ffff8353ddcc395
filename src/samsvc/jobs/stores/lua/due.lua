-- Remove and return up to ARGV[2] members of a schedule due at ARGV[1].
-- KEYS: schedule (zset)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do redis.call('ZREM', KEYS[1], member) end
return due
