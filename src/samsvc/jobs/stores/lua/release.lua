-- Drop the lease a delivery holds; with ARGV[3] == '1' its delivery began and is over.
-- KEYS: results, ledger
-- ARGV: index, token, ended
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
if lease_of(KEYS[2], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[2], ARGV[1] .. ':lease') end
if ARGV[3] == '1' then redis.call('HINCRBY', KEYS[2], ARGV[1] .. ':ended', 1) end
return 1
