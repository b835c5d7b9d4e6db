-- wrk script: POST a realistic non-streaming chat completion (system + user, ~300 bytes of text).
-- The model name is served by every target bench.sh measures (mockllm, nginx, compassd);
-- BENCH_MODEL in the environment replaces it (compassd routes and other providers).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"gpt-4o-mini","temperature":0.2,"max_tokens":256,"messages":['
  .. '{"role":"system","content":"You are a helpful assistant for an online bookshop. '
  .. 'Answer in two sentences at most, be polite, and never invent titles."},'
  .. '{"role":"user","content":"Hello! I am looking for a gift for my father, who loves '
  .. 'naval history and long biographies. He has already read most of the classics about '
  .. 'Nelson. What would you suggest, and roughly how much would it cost me?"}]}'

-- BENCH_MODEL (set by bench.sh) sends the same body to another model or route name.
local bench_model = os.getenv("BENCH_MODEL")
if bench_model and bench_model ~= "" then
  wrk.body = wrk.body:gsub('"model":"[^"]*"', '"model":"' .. bench_model .. '"', 1)
end
