// The course notes' Node.js client, pointed at a local server: fetch (built into Node 18+,
// where the notes import node-fetch) and async/await, N requests one after another or all at
// once. `node fetch.mjs URL N sequential|concurrent` prints one JSON line.
const [url, n = '10', mode = 'concurrent'] = process.argv.slice(2);

async function one() {
	try {
		const response = await fetch(url);
		await response.text();
		return response.status;
	} catch (error) {
		return String(error.cause?.code ?? error.message);
	}
}

const start = performance.now();
const statuses = [];
if (mode === 'sequential') {
	for (let i = 0; i < Number(n); i++) statuses.push(await one());
} else {
	statuses.push(...await Promise.all(Array.from({ length: Number(n) }, one)));
}
const wall_s = (performance.now() - start) / 1000;
console.log(JSON.stringify({ client: 'node fetch', mode, n: Number(n), ok: statuses.filter(s => s === 200).length, wall_s, statuses }));
