-- Extend the lease a delivery holds. Returns 1 when it holds it.
-- KEYS: ledger
-- ARGV: index, token, until_ms
local holder = lease_of(KEYS[1], ARGV[1])
if holder ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1] .. ':lease', ARGV[2] .. '|' .. ARGV[3])
return 1
