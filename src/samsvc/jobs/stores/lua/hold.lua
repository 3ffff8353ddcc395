-- A worker took an image's message: take its lease unless another delivery holds it or the
-- image needs nothing more. Returns 1 when taken.
-- KEYS: job, results, ledger
-- ARGV: index, token, now, lease_ms, retention_s
local status = redis.call('HGET', KEYS[1], 'status')
local i = ARGV[1]
if not status or is_final(status) or redis.call('HEXISTS', KEYS[2], i) == 1 then return 0 end
local holder, until_ms = lease_of(KEYS[3], i)
if holder ~= '' and holder ~= ARGV[2] and until_ms > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[3], i .. ':lease', ARGV[2] .. '|' .. (tonumber(ARGV[3]) + tonumber(ARGV[4])))
redis.call('EXPIRE', KEYS[3], ARGV[5])
return 1
