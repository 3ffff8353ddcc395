"""Redis data held to a byte budget: each entry's size in a hash, their sum in a counter and
their age in a sorted set, so Lua scripts can drop the oldest until the sum fits. Used by the
Redis byte cache (samsvc.cache.redis); the Redis image sessions
(samsvc.sessions.redis) keep the same bookkeeping per owner as well. In every script
KEYS[2] is the sorted set (entry key by time), KEYS[3] the sizes hash, KEYS[4] the byte
counter."""

#: `drop(key)`: remove one entry and its bookkeeping; returns the bytes left.
DROP_LUA = """
local function drop(key)
  local bytes = tonumber(redis.call('HGET', KEYS[3], key) or '0')
  redis.call('ZREM', KEYS[2], key)
  redis.call('HDEL', KEYS[3], key)
  redis.call('DEL', key)
  return redis.call('DECRBY', KEYS[4], bytes)
end
"""
