<?php
/**
 * Plugin Name: Disallow indexing
 * Description: Keeps search engines away where DISALLOW_INDEXING is true (staging).
 */

if (defined('DISALLOW_INDEXING') && DISALLOW_INDEXING === true) {
    add_filter('pre_option_blog_public', '__return_zero');
}
