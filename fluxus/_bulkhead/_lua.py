"""The Lua scripts of the Redis compartment: one atomic step each."""

_PRELUDE = """
local clock = ARGV[#ARGV]
local function now()
  if clock ~= '' then return tonumber(clock) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function sweep(t)
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', t)
  for _, w in ipairs(gone) do redis.call('ZREM', KEYS[2], w) end
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', t) end
end
"""

# ARGV: id, max_concurrent, max_waiting, lease, place ttl, may wait (0/1).
# Returns {code, in use}: 1 leased, 0 refused, 2 waiting.
_TAKE = (
    _PRELUDE
    + """
local t = now()
sweep(t)
local used = redis.call('ZCARD', KEYS[1])
local free = tonumber(ARGV[2]) - used
local id = ARGV[1]
local rank = redis.call('ZRANK', KEYS[2], id)
if rank == false then
  local queued = redis.call('ZCARD', KEYS[2])
  if free > 0 and queued == 0 then
    redis.call('ZADD', KEYS[1], t + tonumber(ARGV[4]), id)
    return {1, used + 1}
  end
  if ARGV[6] == '0' or queued >= tonumber(ARGV[3]) then return {0, used} end
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), id)
  rank = queued
end
if rank < free then
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZADD', KEYS[1], t + tonumber(ARGV[4]), id)
  return {1, used + 1}
end
redis.call('ZADD', KEYS[3], t + tonumber(ARGV[5]), id)
return {2, used}
"""
)

# ARGV: id. Gives a lease back, or a waiting place up.
_GIVE_BACK = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""

# ARGV: lease, ids..., clock. Pushes back the expiry of the live leases.
_RENEW = (
    _PRELUDE
    + """
local t = now()
local expiry = t + tonumber(ARGV[1])
for i = 2, #ARGV - 1 do
  redis.call('ZADD', KEYS[1], 'XX', expiry, ARGV[i])
end
return 1
"""
)

_COUNT = (
    _PRELUDE
    + """
sweep(now())
return redis.call('ZCARD', KEYS[1])
"""
)

#: The parts of one bulkhead's keys, in the order the scripts' KEYS hold them.
_PARTS = ("leases", "queue", "waits", "seq")
