-- A delivery ended in a transient failure: count it, drop its lease, schedule the image.
-- Returns the failures so far (0 when the image needs nothing more).
-- KEYS: job, results, ledger, retries
-- ARGV: job_id, index, token, due_ms, retention_s
local status = redis.call('HGET', KEYS[1], 'status')
local i = ARGV[2]
if not status or is_final(status) or redis.call('HEXISTS', KEYS[2], i) == 1 then return 0 end
if lease_of(KEYS[3], i) == ARGV[3] then redis.call('HDEL', KEYS[3], i .. ':lease') end
redis.call('HINCRBY', KEYS[3], i .. ':ended', 1)
redis.call('HSET', KEYS[3], i .. ':touched', ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[5])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1] .. '|' .. i)
return redis.call('HINCRBY', KEYS[3], i .. ':failures', 1)
