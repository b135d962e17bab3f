"""The scale-out backend: the same protocols on Redis (`store.RedisStore`), for several
chatlane processes on several hosts. Import `core.store.redis.store` for the store: this
package does not import redis-py, so `urls` works without it."""
