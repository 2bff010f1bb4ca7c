-- wrk script for bench/webapp.sh: POST /app/api/messages with a JSON body
-- that differs per request (thread id and counter), and a count of
-- answers other than 201 Created.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
    thread:set("id", #threads + 1)
    table.insert(threads, thread)
end

function init(args)
    thread_id = id
    not_created = 0
end

function request()
    counter = counter + 1
    local body = string.format('{"author":"wrk-%d","text":"bench message %d from thread %d"}',
        thread_id, counter, thread_id)
    return wrk.format("POST", "/app/api/messages",
        { ["Host"] = "bench", ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
    if status ~= 201 then
        not_created = not_created + 1
    end
end

function done(summary, latency, requests)
    local n = 0
    for _, t in ipairs(threads) do
        n = n + (t:get("not_created") or 0)
    end
    io.write(string.format("not_created: %d\n", n))
end
