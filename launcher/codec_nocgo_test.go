//go:build !cgo

package main

// lossyCodec is the compressed codec the job tests run: the pure-Go int8,
// since without cgo the programs they build have no video codecs.
const lossyCodec = "int8"
