"""The Lua scripts ``KeyStore`` runs on a tenant's key hash and subject keys (one slot: ``{t}``).

Each is atomic in Redis; together they make creation, rotation and pruning safe against
concurrent workers and erasures (compare-and-set against the current tenant-key version).
"""

# Returns {current, wrapped current} or nil; with a candidate (ARGV[1] ~= ''), creates version 1 if none.
_CURRENT_TENANT_KEY_LUA = """
local cur = redis.call('HGET', KEYS[1], 'current')
if not cur then
  if ARGV[1] == '' then return false end
  redis.call('HSET', KEYS[1], 'v1', ARGV[1], 'current', '1')
  return {'1', ARGV[1]}
end
return {cur, redis.call('HGET', KEYS[1], 'v' .. cur)}
"""

# SET NX of new subject keys, only while ARGV[1] is still the current tenant-key version
# (so a rotation that has started never misses a key wrapped under an old version).
# KEYS: tenant hash, subject keys. ARGV: version, values. Returns -1 (stale) or 1/0 per key.
_CREATE_SUBJECT_KEYS_LUA = """
if redis.call('HGET', KEYS[1], 'current') ~= ARGV[1] then return -1 end
local out = {}
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], ARGV[i], 'NX') then out[i - 1] = 1 else out[i - 1] = 0 end
end
return out
"""

# Starts a rotation: adds version ARGV[2] and makes it current, if ARGV[1] is still current.
_BEGIN_ROTATION_LUA = """
if redis.call('HGET', KEYS[1], 'current') ~= ARGV[1] then return 0 end
if redis.call('HEXISTS', KEYS[1], 'v' .. ARGV[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v' .. ARGV[2], ARGV[3], 'current', ARGV[2])
return 1
"""

# Compare-and-set of re-wrapped subject keys: a key destroyed or changed since it was read is
# left alone (a concurrent erasure is never undone). -1 if another rotation made a newer version current.
# KEYS: tenant hash, subject keys. ARGV: new version, then per key the value read and its replacement.
_REWRAP_LUA = """
if redis.call('HGET', KEYS[1], 'current') ~= ARGV[1] then return -1 end
local out = {}
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[2 * i - 2] then
    redis.call('SET', KEYS[i], ARGV[2 * i - 1])
    out[i - 1] = 1
  else
    out[i - 1] = 0
  end
end
return out
"""

# Deletes tenant-key versions older than ARGV[1] (never the current one); returns how many.
_PRUNE_LUA = """
local keep = tonumber(ARGV[1])
local cur = tonumber(redis.call('HGET', KEYS[1], 'current'))
local n = 0
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  local v = tonumber(string.match(f, '^v(%d+)$'))
  if v and v < keep and v ~= cur then
    redis.call('HDEL', KEYS[1], f)
    n = n + 1
  end
end
return n
"""
