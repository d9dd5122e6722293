// A worker on the real Node iii SDK (iii-sdk 0.22.1) against `evstate serve`.
// Usage: node client.mjs ws://127.0.0.1:PORT
// Prints one JSON line with every result, then exits 0 (1 on a failure, with the error).
import { registerWorker } from 'iii-sdk'

const url = process.argv[2]
const iii = registerWorker(url, { workerName: 'node-test-worker' })

const events = []
let allEvents
const gotEvents = new Promise((resolve) => { allEvents = resolve })
iii.registerFunction('node::on-change', async (event, metadata) => {
  events.push({ event, metadata })
  if (events.length === 2) allEvents()
  return null
})
iii.registerTrigger({
  type: 'state',
  function_id: 'node::on-change',
  config: { scope: 'node-orders' },
  metadata: { from: 'node' },
})

const call = (function_id, payload) => iii.trigger({ function_id, payload })
const timeout = (ms, what) =>
  new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), ms))

async function main() {
  const out = {}
  out.set = await call('state::set', { scope: 'node-orders', key: 'o1', value: { status: 'new', n: 1 } })
  out.get = await call('state::get', { scope: 'node-orders', key: 'o1' })
  const missing = await call('state::get', { scope: 'node-orders', key: 'nope' })
  out.getMissing = missing === undefined ? 'undefined' : missing
  out.update = await call('state::update', {
    scope: 'node-orders',
    key: 'o1',
    ops: [
      { type: 'increment', path: 'n', by: 2 },
      { type: 'set', path: 'status', value: 'paid' },
    ],
  })
  out.list = await call('state::list', { scope: 'node-orders' })
  out.groups = await call('state::list_groups', {})
  try {
    await call('nope::x', {})
    out.error = 'no error'
  } catch (err) {
    out.error = { code: err.code, message: err.message }
  }
  await Promise.race([gotEvents, timeout(10000, 'trigger events')])
  out.events = events
  console.log(JSON.stringify(out))
}

main()
  .then(async () => { await iii.shutdown(); process.exit(0) })
  .catch(async (err) => { console.error(err); await iii.shutdown(); process.exit(1) })
