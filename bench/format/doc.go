// Package format holds the benchmarks behind the defaults of the tms image format: chunk size,
// chunk hash and zstd level. It has no code of its own; docs/format.md has the figures and the
// decision they support. Run them all (about two minutes on two cores) with
//
//	go test -run '^$' -bench . -benchtime 2x ./bench/format/
//
// or one family with, for example, -bench 'ChangeCost/clustered'. A full run holds about 6 GiB in
// memory (a 1 GiB sample disk and three changed copies of it, and the compressed forms of the
// 256 MiB one). BenchmarkDirPut writes to TMPDIR: point it at the disk a store will use.
package format
