package video

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/asticode/go-astiav"

	"github.com/vccl/vccl/gradcodec"
)

var ffmpegLogOnce sync.Once

// quietFFmpeg silences FFmpeg's logging unless VCCL_FFMPEG_LOG names a
// level (quiet, error, warning, info, verbose, debug).
func quietFFmpeg() {
	ffmpegLogOnce.Do(func() {
		lvl := astiav.LogLevelQuiet
		switch strings.ToLower(os.Getenv("VCCL_FFMPEG_LOG")) {
		case "error":
			lvl = astiav.LogLevelError
		case "warning":
			lvl = astiav.LogLevelWarning
		case "info":
			lvl = astiav.LogLevelInfo
		case "verbose":
			lvl = astiav.LogLevelVerbose
		case "debug":
			lvl = astiav.LogLevelDebug
		}
		astiav.SetLogLevel(lvl)
	})
}

// Encoder names per codec.
var (
	swEncoders = map[string]string{"h264": "libx264", "hevc": "libx265"}
	hwEncoders = map[string]string{"h264": "h264_nvenc", "hevc": "hevc_nvenc"}
	swDecoders = map[string]string{"h264": "h264", "hevc": "hevc"}
	hwDecoders = map[string]string{"h264": "h264_cuvid", "hevc": "hevc_cuvid"}
)

// DefaultPreset returns the preset used when Options.Preset is empty.
func DefaultPreset(codec, backend string) string {
	if backend == "nvenc" {
		return "p1"
	}
	return "ultrafast"
}

// encoderConfig is what openEncoder needs.
type encoderConfig struct {
	encName string
	hw      bool
	preset  string
	w, h    int
	qp      int
	threads int // libx264/libx265 threads per picture
}

// openEncoder opens an intra-only constant-QP encoder context.
func openEncoder(c encoderConfig) (*astiav.CodecContext, error) {
	quietFFmpeg()
	codec := astiav.FindEncoderByName(c.encName)
	if codec == nil {
		return nil, fmt.Errorf("gradcodec: %w: encoder %s is not in this FFmpeg build", gradcodec.ErrBackendUnavailable, c.encName)
	}
	cc := astiav.AllocCodecContext(codec)
	if cc == nil {
		return nil, fmt.Errorf("gradcodec: allocating %s context failed", c.encName)
	}
	cc.SetWidth(c.w)
	cc.SetHeight(c.h)
	cc.SetTimeBase(astiav.NewRational(1, 25))
	cc.SetFramerate(astiav.NewRational(25, 1))
	cc.SetGopSize(1)
	cc.SetThreadCount(1)
	d := astiav.NewDictionary()
	defer d.Free()
	qp := strconv.Itoa(c.qp)
	set := func(k, v string) { _ = d.Set(k, v, 0) }
	switch {
	case c.hw:
		cc.SetPixelFormat(astiav.PixelFormatYuv420P)
		set("preset", c.preset)
		set("tune", "ull")
		set("rc", "constqp")
		set("qp", qp)
		set("zerolatency", "1")
		set("delay", "0")
		set("forced-idr", "1")
	case c.encName == "libx264":
		cc.SetPixelFormat(astiav.PixelFormatGray8)
		set("preset", c.preset)
		set("tune", "zerolatency")
		set("qp", qp)
		set("x264-params", "keyint=1:min-keyint=1:scenecut=0:bframes=0:rc-lookahead=0:sync-lookahead=0:threads=1:sliced-threads=0:aq-mode=0:psy=0")
	case c.encName == "libx265":
		cc.SetPixelFormat(astiav.PixelFormatGray8)
		set("preset", c.preset)
		set("x265-params", "keyint=1:min-keyint=1:bframes=0:rc-lookahead=0:frame-threads=1:pools=none:log-level=none:repeat-headers=1:info=0:aq-mode=0:psy-rd=0:psy-rdoq=0:qp="+qp)
	}
	if err := cc.Open(codec, d); err != nil {
		cc.Free()
		return nil, fmt.Errorf("gradcodec: opening %s %dx%d preset %s qp %d: %w", c.encName, c.w, c.h, c.preset, c.qp, err)
	}
	return cc, nil
}

var (
	probeMu    sync.Mutex
	probeCache = map[string]bool{}
)

var (
	presetMu    sync.Mutex
	presetCache = map[string]error{}
)

// probeEncoder opens (once per process for each encoder and preset) a
// 256×256 context with c's encoder and preset, so that a bad preset fails in
// NewEncoder rather than mid-training.
func probeEncoder(c encoderConfig) error {
	key := c.encName + "\x00" + c.preset
	presetMu.Lock()
	defer presetMu.Unlock()
	if err, done := presetCache[key]; done {
		return err
	}
	c.w, c.h, c.qp = 256, 256, 30
	var err error
	if c.hw {
		var cc *astiav.CodecContext
		if cc, err = openEncoder(c); err == nil {
			cc.Free()
		}
	} else {
		var n *nativeEncoder
		if n, err = openNative(c.encName == "libx265", c.preset, c.w, c.h, 1); err == nil {
			n.close()
		}
	}
	presetCache[key] = err
	return err
}

// hwEncoderAvailable reports whether the NVENC encoder of codec opens here.
func hwEncoderAvailable(codec string) bool {
	name := hwEncoders[codec]
	return opensHere(name, func() (*astiav.CodecContext, error) {
		return openEncoder(encoderConfig{encName: name, hw: true, preset: "p1", w: 256, h: 256, qp: 30})
	})
}

// hwDecoderAvailable reports whether the cuvid decoder of codec opens here.
func hwDecoderAvailable(codec string) bool {
	name := hwDecoders[codec]
	return opensHere(name, func() (*astiav.CodecContext, error) { return openDecoder(name) })
}

// opensHere reports whether open (of the FFmpeg codec name) succeeds,
// trying it once per process: the answer is kept in probeCache.
func opensHere(name string, open func() (*astiav.CodecContext, error)) bool {
	probeMu.Lock()
	defer probeMu.Unlock()
	if ok, done := probeCache[name]; done {
		return ok
	}
	cc, err := open()
	if err == nil {
		cc.Free()
	}
	probeCache[name] = err == nil
	return err == nil
}

func openDecoder(name string) (*astiav.CodecContext, error) {
	quietFFmpeg()
	codec := astiav.FindDecoderByName(name)
	if codec == nil {
		return nil, fmt.Errorf("gradcodec: %w: decoder %s is not in this FFmpeg build", gradcodec.ErrBackendUnavailable, name)
	}
	cc := astiav.AllocCodecContext(codec)
	if cc == nil {
		return nil, fmt.Errorf("gradcodec: allocating %s context failed", name)
	}
	cc.SetThreadCount(1)
	cc.SetFlags(cc.Flags().Add(astiav.CodecContextFlagLowDelay))
	if err := cc.Open(codec, nil); err != nil {
		cc.Free()
		return nil, fmt.Errorf("gradcodec: opening decoder %s: %w", name, err)
	}
	return cc, nil
}
