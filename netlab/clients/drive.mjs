// What both Node clients share: N requests one after another or all at once, timed, and one
// JSON line for netlab to read. Each client passes `one`, a function that makes one request
// and resolves to its status (or the error's code).
export async function drive(name, one) {
	const [url, n = '10', mode = 'concurrent'] = process.argv.slice(2);
	const start = performance.now();
	const statuses = [];
	if (mode === 'sequential') {
		for (let i = 0; i < Number(n); i++) statuses.push(await one(url));
	} else {
		statuses.push(...await Promise.all(Array.from({ length: Number(n) }, () => one(url))));
	}
	const wall_s = (performance.now() - start) / 1000;
	console.log(JSON.stringify({ client: name, mode, n: Number(n), ok: statuses.filter(s => s === 200).length, wall_s, statuses }));
}
