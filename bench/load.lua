-- wrk script for every bench scenario. Arguments after `--`:
--   get PATH             GET PATH on every request
--   post CONTENT_ID      the legacy create (the shared post.lua body, plus its id) into CONTENT_ID
--   postmany CONTENT_ID  the same create, each from an email of its own (reader<T>-<N>@...):
--                        the per-author lock (check and insert in one step) never queues
--   mix PATH CONTENT_ID  90 % GET PATH, 10 % create into CONTENT_ID (every 10th request)
--   v1mix PATH CONTENT_ID  the same with the v1 create (POST /api/v1/contents/ID/comments)
-- It counts the requests it issues, so the bench can prove exact metrics and persistence:
-- a server counts between wrk's completed requests and these issued ones (the difference
-- is what was in flight when wrk stopped). done() prints "bench-issued N posts M".
-- Every create carries its own id, "bench-<thread>-<n>", in its X-Request-ID header and at
-- the end of its text; the ids a server echoed on a 2xx answer are acknowledged creates,
-- which done() prints as "bench-acked ID ..." so the bench can find each one's row: a
-- count alone cannot tell a lost acknowledged create from one answered after wrk stopped.
local mode = "get"
local get_req, post_path, post_headers, post_content
local threads = {}
thread_no = 0 -- set by setup(): emails of postmany are unique across threads
issued = 0 -- globals: done() reads them from each thread with thread:get()
posts = 0
acked = {} -- ids of the creates answered 2xx, as the server echoed them

local function on_response(status, headers, body)
  local id = headers["X-Request-ID"] or headers["x-request-id"]
  if status < 300 and id ~= nil and string.sub(id, 1, 6) == "bench-" then
    acked[#acked + 1] = id
  end
end

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_no", #threads)
end

function init(args)
  mode = args[1] or "get"
  local path, content = args[2] or "/", args[2]
  if mode == "mix" or mode == "v1mix" then
    content = args[3]
  end
  get_req = wrk.format("GET", path, { Host = wrk.headers["Host"] })
  post_content = content
  post_headers = { Host = wrk.headers["Host"], ["Content-Type"] = "application/json" }
  post_path = mode == "v1mix" and "/api/v1/contents/" .. (content or "") .. "/comments"
    or "/api/comment/new"
  if mode ~= "get" then
    response = on_response -- wrk parses responses only for scripts that define it
  end
end

local function create()
  posts = posts + 1
  local id = "bench-" .. thread_no .. "-" .. posts
  post_headers["X-Request-ID"] = id
  local email, text = "alice@example.com", "first post! " .. id
  if mode == "postmany" then
    email = "reader" .. thread_no .. "-" .. issued .. "@example.com"
  end
  local json
  if mode == "v1mix" then
    json = '{"body":"' .. text .. '","email":"' .. email .. '"}'
  else
    json = '{"email":"' .. email .. '","comment":"' .. text .. '","content_id":"'
      .. post_content .. '"}'
  end
  return wrk.format("POST", post_path, post_headers, json)
end

function request()
  issued = issued + 1
  if mode == "post" or mode == "postmany" or (mode ~= "get" and issued % 10 == 0) then
    return create()
  end
  return get_req
end

function done(summary, latency, requests)
  local total_issued, total_posts, ids = 0, 0, {}
  for _, t in ipairs(threads) do
    total_issued = total_issued + t:get("issued")
    total_posts = total_posts + t:get("posts")
    for _, id in ipairs(t:get("acked") or {}) do
      ids[#ids + 1] = id
    end
  end
  io.write(string.format("bench-issued %d posts %d\n", total_issued, total_posts))
  io.write("bench-acked " .. table.concat(ids, " ") .. "\n")
end
