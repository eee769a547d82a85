package collective

// lossyCodec is the compressed codec the tests of this package run: h264
// where the video plug-in is linked (cgo), else the pure-Go int8.
var lossyCodec = DefaultCodec
