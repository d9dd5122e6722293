// The iii state worker's functions and evstate::batch through the real Node iii SDK (0.22.1).
// Usage: node worker_functions.mjs ws://127.0.0.1:PORT
// Prints one JSON line with every result, then exits 0 (1 on a failure, with the error).
import { registerWorker } from 'iii-sdk'

const url = process.argv[2]
const iii = registerWorker(url, { workerName: 'node-functions-worker' })
const call = (function_id, payload) => iii.trigger({ function_id, payload })
const failure = async (function_id, payload) => {
  try {
    await call(function_id, payload)
    return 'no error'
  } catch (err) {
    return { code: err.code, message: err.message }
  }
}

async function main() {
  const out = {}
  const cas = 'state::compare-and-set'
  out.casCreate = await call(cas, { scope: 'n', key: 'lock', value: { by: 'node' } })
  out.casMiss = await call(cas, { scope: 'n', key: 'lock', expected: null, value: 1 })
  out.casSwap = await call(cas, { scope: 'n', key: 'lock', expected: { by: 'node' }, value: 2 })
  for (const key of ['b', 'a', 'ü']) await call('state::set', { scope: 'n', key, value: key })
  out.keys = await call('state::list_keys', { scope: 'n' })
  const pages = []
  let page = await call('state::list_entries', { scope: 'n', limit: 2 })
  pages.push(page)
  await call('state::delete', { scope: 'n', key: 'ü' })
  while (!page.done) {
    page = await call('state::list_entries', { scope: 'n', limit: 2, cursor: page.next_cursor })
    pages.push(page)
  }
  out.pages = pages
  out.reused = await failure('state::list_entries', { scope: 'n', limit: 2, cursor: pages[0].next_cursor })
  out.badLimit = await failure('state::list_entries', { scope: 'n', limit: 0 })
  out.batch = await call('evstate::batch', {
    ops: [
      { op: 'set', scope: 'n', key: 'x', value: 1 },
      { op: 'compare-and-set', scope: 'n', key: 'x', expected: 1, value: 2 },
    ],
  })
  out.batchFailed = await failure('evstate::batch', {
    ops: [
      { op: 'delete', scope: 'n', key: 'x' },
      { op: 'compare-and-set', scope: 'n', key: 'x', expected: 1, value: 3 },
    ],
  })
  console.log(JSON.stringify(out))
}

main()
  .then(async () => { await iii.shutdown(); process.exit(0) })
  .catch(async (err) => { console.error(err); await iii.shutdown(); process.exit(1) })
