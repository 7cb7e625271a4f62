"""The breaker's steps in Lua: each one script, atomic in Redis.

The last argument of every script is the time: empty for the Redis
server's clock, which every process shares; the tests pass a fake one.
"""

_PRELUDE = """
-- The last argument is the time: empty for the server's clock, which every
-- process shares; the tests pass a fake one.
local clock = ARGV[#ARGV]
local function now()
  if clock ~= '' then return tonumber(clock) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function move(epoch, state)
  redis.call('HSET', KEYS[1], 'state', state, 'epoch', epoch + 1,
             'failures', 0, 'successes', 0)
  redis.call('DEL', KEYS[2], KEYS[3])
end
local function open(epoch)
  move(epoch, 'open')
  redis.call('HSET', KEYS[1], 'opened_at', string.format('%.6f', now()))
end
local function plural(n, one, many)
  if n == 1 then return n .. ' ' .. one end
  return n .. ' ' .. many
end
-- The window (KEYS[3]): ten buckets of width seconds, b<i> holding
-- 'calls failed slow', and the running totals. Count n calls finished at
-- t (nf failed, ns slow), then open the circuit if a rate calls for it.
local BUCKETS = 10
local function window(epoch, t, n, nf, ns, width, minimum, frate, srate)
  local w = redis.call('HMGET', KEYS[3], 'head', 'calls', 'failed', 'slow')
  local index = math.floor(t / tonumber(width))
  local head = tonumber(w[1] or '') or index - BUCKETS
  local calls = tonumber(w[2] or '0')
  local failed = tonumber(w[3] or '0')
  local slow = tonumber(w[4] or '0')
  if index > head then
    for stale = math.max(head + 1, index - BUCKETS + 1), index do
      local field = 'b' .. (stale % BUCKETS)
      local old = redis.call('HGET', KEYS[3], field)
      if old then
        local c, f, s = string.match(old, '(%d+) (%d+) (%d+)')
        calls = calls - tonumber(c)
        failed = failed - tonumber(f)
        slow = slow - tonumber(s)
        redis.call('HDEL', KEYS[3], field)
      end
    end
    head = index
  end
  local field = 'b' .. (head % BUCKETS)
  local c, f, s = 0, 0, 0
  local old = redis.call('HGET', KEYS[3], field)
  if old then c, f, s = string.match(old, '(%d+) (%d+) (%d+)') end
  calls, failed, slow = calls + n, failed + nf, slow + ns
  redis.call('HSET', KEYS[3], 'head', string.format('%d', head),
             'calls', calls, 'failed', failed, 'slow', slow,
             field, (tonumber(c) + n) .. ' ' .. (tonumber(f) + nf) .. ' '
                    .. (tonumber(s) + ns))
  if calls < tonumber(minimum) then return nil end
  if frate ~= '' and failed / calls >= tonumber(frate) then
    open(epoch)
    return {'closed', 'open', failed .. ' of the last ' .. calls .. ' calls failed'}
  end
  if srate ~= '' and slow / calls >= tonumber(srate) then
    open(epoch)
    return {'closed', 'open', slow .. ' of the last ' .. calls .. ' calls were slow'}
  end
  return nil
end
"""

# ARGV: reset_timeout, max_trials, trial_timeout, then the window's width
# ('' without a window), minimum_calls, failure_rate and slow_call_rate (''
# when off), then the successes this process has not reported yet: their
# epoch, how many were quick and how many slow.
# Returns {code (0 refused, 1 closed, 2 trial), epoch, trial id, failures,
# retry_after ('inf' when opened by hand), old state, new state, reason}.
_ADMIT = (
    _PRELUDE
    + """
local h = redis.call('HMGET', KEYS[1], 'state', 'epoch', 'failures',
                     'opened_at', 'forced')
local state = h[1] or 'closed'
local epoch = tonumber(h[2] or '0')
if state == 'closed' then
  local quick, slow = tonumber(ARGV[9]), tonumber(ARGV[10])
  if ARGV[4] ~= '' and quick + slow > 0 and tonumber(ARGV[8]) == epoch then
    local moved = window(epoch, now(), quick + slow, 0, slow,
                         ARGV[4], ARGV[5], ARGV[6], ARGV[7])
    if moved then
      return {0, epoch + 1, '', 0, ARGV[1], moved[1], moved[2], moved[3]}
    end
  end
  return {1, epoch, '', tonumber(h[3] or '0'), '0', '', '', ''}
end
local old = ''
local t = now()
if state == 'open' then
  if h[5] == '1' then return {0, epoch, '', 0, 'inf', '', '', ''} end
  local wait = tonumber(h[4] or '0') + tonumber(ARGV[1]) - t
  if wait > 0 then
    return {0, epoch, '', 0, string.format('%.6f', wait), '', '', ''}
  end
  move(epoch, 'half-open')
  epoch = epoch + 1
  old = 'open'
end
local new = old == '' and '' or 'half-open'
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', t)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then
  return {0, epoch, '', 0, '0', old, new, ''}
end
local id = epoch .. ':' .. redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('ZADD', KEYS[2], t + tonumber(ARGV[3]), id)
return {2, epoch, id, 0, '0', old, new, ''}
"""
)

# ARGV: outcome ('s', 'f' or 'n'), epoch, trial id ('' for a closed call),
# failure_threshold ('' when off), success_threshold, slow ('1' or ''), then
# the window's width, minimum_calls, failure_rate and slow_call_rate as for
# the admission. Returns {} or {old, new, reason}.
_RECORD = (
    _PRELUDE
    + """
local h = redis.call('HMGET', KEYS[1], 'state', 'epoch')
local state = h[1] or 'closed'
local epoch = tonumber(h[2] or '0')
local trial = ARGV[3] ~= ''
if trial then redis.call('ZREM', KEYS[2], ARGV[3]) end
if tonumber(ARGV[2]) ~= epoch or ARGV[1] == 'n' then return {} end
if trial then
  if state ~= 'half-open' then return {} end
  if ARGV[1] == 'f' then
    open(epoch)
    return {state, 'open', 'a trial call failed'}
  end
  local n = redis.call('HINCRBY', KEYS[1], 'successes', 1)
  if n >= tonumber(ARGV[5]) then
    move(epoch, 'closed')
    return {state, 'closed', plural(n, 'trial success', 'trial successes')}
  end
  return {}
end
if state ~= 'closed' then return {} end
local slow = ARGV[6] == '1' and 1 or 0
if ARGV[1] == 's' then
  redis.call('HSET', KEYS[1], 'failures', 0)
  if ARGV[7] == '' then return {} end
  return window(epoch, now(), 1, 0, slow, ARGV[7], ARGV[8], ARGV[9], ARGV[10])
         or {}
end
local n = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if ARGV[4] ~= '' and n >= tonumber(ARGV[4]) then
  open(epoch)
  return {state, 'open',
          plural(n, 'consecutive failure', 'consecutive failures')}
end
if ARGV[7] == '' then return {} end
return window(epoch, now(), 1, 1, slow, ARGV[7], ARGV[8], ARGV[9], ARGV[10])
       or {}
"""
)

# ARGV: 'reset' or 'open'. Returns {} or {old, new, reason}.
_CONTROL = (
    _PRELUDE
    + """
local h = redis.call('HMGET', KEYS[1], 'state', 'epoch')
local state = h[1] or 'closed'
local epoch = tonumber(h[2] or '0')
if ARGV[1] == 'reset' then
  redis.call('HSET', KEYS[1], 'forced', 0, 'failures', 0)
  if state == 'closed' then return {} end
  move(epoch, 'closed')
  return {state, 'closed', 'reset by hand'}
end
redis.call('HSET', KEYS[1], 'forced', 1)
if state == 'open' then return {} end
open(epoch)
return {state, 'open', 'opened by hand'}
"""
)


#: The scripts by name, as ``RedisCircuit`` runs them.
SCRIPTS = {"admit": _ADMIT, "record": _RECORD, "control": _CONTROL}
