//go:build cgo

package main

// lossyCodec is the compressed codec the job tests run: hevc where cgo
// links the video plug-in into the programs they build.
const lossyCodec = "hevc"
